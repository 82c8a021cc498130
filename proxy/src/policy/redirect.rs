//! `routes[].redirect`: a route answered by the edge with a redirect (nginx `return 301`),
//! no pool involved. `to` is an absolute `http(s)://host[:port][/path]` URL; with
//! `keep_path` the request path is appended to `to`'s path, with `keep_query` the request
//! query is appended (after `to`'s own, joined with `&`). The answer is
//! [`crate::errors::EdgeError::Redirect`] (`Location` and `{"redirect":"<location>"}`).

/// The statuses a redirect may use.
pub const REDIRECT_STATUSES: &[u16] = &[301, 302, 307, 308];

/// A validated redirect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    /// `scheme://authority` of `to`.
    pub origin: String,
    /// `to`'s path (`/` when it has none).
    pub path: String,
    /// `to`'s query, if any (without `?`).
    pub query: Option<String>,
    pub status: u16,
    pub keep_path: bool,
    pub keep_query: bool,
}

impl Redirect {
    /// Validates `to` and `status`. `Err((key, reason))` names the key under `redirect`.
    pub fn new(
        to: &str,
        status: u16,
        keep_path: bool,
        keep_query: bool,
    ) -> Result<Redirect, (&'static str, String)> {
        if !REDIRECT_STATUSES.contains(&status) {
            return Err((
                "status",
                format!("{status} is not one of 301, 302, 307, 308"),
            ));
        }
        let bad = |why: &str| ("to", format!("{to:?}: {why}"));
        let uri: http::Uri = to.parse().map_err(|_| bad("not a URL"))?;
        match uri.scheme_str() {
            Some("http") | Some("https") => {}
            _ => return Err(bad("must start with http:// or https://")),
        }
        let Some(auth) = uri.authority() else {
            return Err(bad("no host"));
        };
        if auth.as_str().contains('@') || auth.host().is_empty() {
            return Err(bad("no user info, a host is required"));
        }
        if to.contains('#') {
            return Err(bad("no fragment"));
        }
        Ok(Redirect {
            origin: format!("{}://{}", uri.scheme_str().unwrap_or("https"), auth),
            path: uri.path().to_string(),
            query: uri.query().filter(|q| !q.is_empty()).map(str::to_string),
            status,
            keep_path,
            keep_query,
        })
    }

    /// The `Location` of a request for `path` (raw, starting with `/`) and `query`.
    pub fn location(&self, path: &str, query: Option<&str>) -> String {
        let mut s = String::with_capacity(self.origin.len() + self.path.len() + path.len());
        s.push_str(&self.origin);
        if self.keep_path && path != "/" {
            s.push_str(self.path.trim_end_matches('/'));
            s.push_str(path);
        } else {
            s.push_str(&self.path);
        }
        let q = query.filter(|q| self.keep_query && !q.is_empty());
        for (i, part) in self.query.as_deref().into_iter().chain(q).enumerate() {
            s.push(if i == 0 { '?' } else { '&' });
            s.push_str(part);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_keep_path_and_query() {
        let r = Redirect::new("https://new.example.com", 301, true, true).expect("valid");
        assert_eq!(
            r.location("/docs/a", Some("x=1")),
            "https://new.example.com/docs/a?x=1"
        );
        assert_eq!(r.location("/", None), "https://new.example.com/");
        let r =
            Redirect::new("https://new.example.com/v2/?src=old", 308, true, true).expect("valid");
        assert_eq!(
            r.location("/a", Some("b=2")),
            "https://new.example.com/v2/a?src=old&b=2"
        );
        let r = Redirect::new("http://127.0.0.1:8080/landing", 302, false, false).expect("valid");
        assert_eq!(
            r.location("/a/b", Some("q=1")),
            "http://127.0.0.1:8080/landing"
        );
        let r = Redirect::new("https://a.example", 307, false, true).expect("valid");
        assert_eq!(r.location("/x", Some("q=1")), "https://a.example/?q=1");
    }

    #[test]
    fn bad_targets_and_statuses_are_refused() {
        assert_eq!(
            Redirect::new("https://a.example", 303, true, true)
                .expect_err("303")
                .0,
            "status"
        );
        for to in [
            "/relative",
            "ftp://a.example",
            "https://",
            "https://u:p@a.example/",
            "https://a.example/#f",
            "not a url",
        ] {
            let e = Redirect::new(to, 301, true, true).expect_err(to);
            assert_eq!(e.0, "to", "{to}");
        }
    }
}
