//! `routes[].timeouts` and `routes[].max_body_bytes`: a route's own upstream timeouts and
//! request-body limit, overriding `timeouts.*` and `limits.max_body_bytes` for its
//! requests (`http` and `sessions` routes). A route's body limit obeys the global
//! streamed-body rule: over the 64 KiB the edge reads whole (or 0, unlimited) only with
//! `limits.allow_streamed_bodies: true`, like `limits.max_body_bytes`.

use std::time::Duration;

pub use crate::config::file::routes::RouteTimeoutsFile;
use crate::config::ConfigError;

/// A route's validated timeouts (`None`: the global one).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouteTimeouts {
    pub connect: Option<Duration>,
    pub read: Option<Duration>,
    pub idle: Option<Duration>,
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

#[cfg(test)]
mod tests {
    use crate::config::parse;

    const BASE: &str = "workers:\n  - id: w1\n    address: 127.0.0.1:8081\nroutes:\n  - name: api\n    path: /\n    pool: sessions\n";

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
            super::RouteTimeouts {
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
}
