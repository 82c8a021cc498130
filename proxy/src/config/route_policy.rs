//! Validation of the per-route policies of the "IP rules, header rules, redirect" part of
//! issue #19 (`routes[].allow`, `.deny`, `.redirect`) into [`crate::policy::RoutePolicy`].
//! Every key is documented with its unit and default in `conf/hotplex.yaml`.

use super::routes::RouteFile;
use super::ConfigError;

use crate::policy::headers::{rule_name, HeaderRules, Template};
use crate::policy::ip::IpRules;
use crate::policy::redirect::Redirect;
use crate::policy::RoutePolicy;

pub use super::file::routes::{HeaderRulesFile, RedirectFile};

fn header_rules(file: &str, key: &str, h: &HeaderRulesFile) -> Result<HeaderRules, ConfigError> {
    let name = |k: String, n: &str| rule_name(n).map_err(|why| ConfigError::new(file, k, why));
    let mut rules = HeaderRules::default();
    for (j, n) in h.remove.iter().enumerate() {
        rules.remove.push(name(format!("{key}.remove[{j}]"), n)?);
    }
    for (which, map) in [("set", &h.set), ("add", &h.add)] {
        for (n, v) in map {
            let k = format!("{key}.{which}.{n}");
            let hn = name(k.clone(), n)?;
            let t = Template::parse(v).map_err(|why| ConfigError::new(file, k, why))?;
            if which == "set" {
                rules.set.push((hn, t));
            } else {
                rules.add.push((hn, t));
            }
        }
    }
    if rules == HeaderRules::default() {
        return Err(ConfigError::new(
            file,
            key,
            "no rule: give remove, set or add, or leave it out",
        ));
    }
    Ok(rules)
}

fn cidrs(
    file: &str,
    i: usize,
    key: &str,
    list: Option<&Vec<String>>,
) -> Result<Vec<super::security::Cidr>, ConfigError> {
    let Some(list) = list else {
        return Ok(Vec::new());
    };
    if list.is_empty() {
        return Err(ConfigError::new(
            file,
            format!("routes[{i}].{key}"),
            format!("empty list: leave {key} out"),
        ));
    }
    IpRules::parse_list(list)
        .map_err(|(j, why)| ConfigError::new(file, format!("routes[{i}].{key}[{j}]"), why))
}

/// Validates the policies of `routes[i]`.
pub fn validate(file: &str, i: usize, r: &RouteFile) -> Result<RoutePolicy, ConfigError> {
    let allow = cidrs(file, i, "allow", r.allow.as_ref())?;
    let deny = cidrs(file, i, "deny", r.deny.as_ref())?;
    let ip = (!allow.is_empty() || !deny.is_empty()).then_some(IpRules { allow, deny });
    let redirect = match &r.redirect {
        None if r.pool.is_empty() => {
            return Err(ConfigError::new(
                file,
                format!("routes[{i}].pool"),
                "required (sessions or an http pool), unless the route is a redirect",
            ))
        }
        None => None,
        Some(_) if !r.pool.is_empty() => {
            return Err(ConfigError::new(
                file,
                format!("routes[{i}].redirect"),
                "a redirect route is answered by the edge: leave pool out",
            ))
        }
        Some(_) if r.auth != super::routes::AuthFile::Required || r.forward_credentials => {
            return Err(ConfigError::new(
                file,
                format!("routes[{i}].redirect"),
                "a redirect route is answered before authentication: leave auth and forward_credentials out",
            ))
        }
        Some(d) => Some(
            Redirect::new(&d.to, d.status, d.keep_path, d.keep_query).map_err(|(k, why)| {
                ConfigError::new(file, format!("routes[{i}].redirect.{k}"), why)
            })?,
        ),
    };
    let rules = |which: &str, f: Option<&HeaderRulesFile>| {
        f.map(|h| header_rules(file, &format!("routes[{i}].{which}"), h))
            .transpose()
    };
    let request_headers = rules("request_headers", r.request_headers.as_ref())?;
    let response_headers = rules("response_headers", r.response_headers.as_ref())?;
    let has_rules = request_headers.is_some() || response_headers.is_some();
    if redirect.is_some() && has_rules {
        return Err(ConfigError::new(
            file,
            format!("routes[{i}].redirect"),
            "a redirect route forwards nothing: header rules do not apply",
        ));
    }
    if request_headers.is_some() && r.pool == super::runtime::routes::SESSIONS_POOL {
        return Err(ConfigError::new(
            file,
            format!("routes[{i}].request_headers"),
            "only on http routes (the session API's request headers are the worker contract)",
        ));
    }
    Ok(RoutePolicy {
        ip,
        redirect,
        request_headers,
        response_headers,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::parse;

    const BASE: &str = "workers:\n  - id: w1\n    address: 127.0.0.1:8081\n";

    fn err(routes: &str) -> (String, String) {
        let e = parse("conf/x.yaml", &format!("{BASE}routes:\n{routes}")).expect_err("invalid");
        assert_eq!(e.file, "conf/x.yaml");
        (e.key, e.reason)
    }

    #[test]
    fn valid_policies() {
        let c = parse(
            "f",
            &format!(
                "{BASE}routes:\n  - name: old\n    path: /old\n    redirect:\n      to: https://new.example.com/x\n  \
                 - name: api\n    path: /\n    pool: sessions\n    allow: [\"127.0.0.0/8\", \"::1\"]\n    deny: [\"127.0.0.2\"]\n    \
                 response_headers:\n      set: {{X-Frame-Options: DENY}}\n      add: {{X-Served-For: \"$client_ip $scheme\"}}\n"
            ),
        )
        .expect("valid");
        let r = &c.routes.routes;
        let red = r[0].policy.redirect.as_ref().expect("redirect");
        assert_eq!(
            (red.status, red.keep_path, red.keep_query),
            (301, true, true)
        );
        assert!(r[0].policy.ip.is_none());
        let ip = r[1].policy.ip.as_ref().expect("ip rules");
        assert_eq!((ip.allow.len(), ip.deny.len()), (2, 1));
        assert!(r[1].policy.redirect.is_none());
        assert!(r[1].policy.response_headers.is_some());
        assert!(r[1].policy.request_headers.is_none());
    }

    #[test]
    fn a_reload_widening_ip_rules_is_a_downgrade() {
        let cfg = |rules: &str, extra: &str| {
            parse(
                "t.yaml",
                &format!(
                    "{BASE}{extra}routes:\n  - name: api\n    path: /\n    pool: sessions\n{rules}"
                ),
            )
            .expect("valid")
        };
        let tight = "    allow: [\"10.0.0.0/8\"]\n    deny: [\"10.9.0.0/16\"]\n";
        let check = crate::config::downgrade::check;
        check(&cfg(tight, ""), &cfg(tight, "")).expect("unchanged");
        check(&cfg("", ""), &cfg(tight, "")).expect("adding rules closes");
        for wider in [
            "",
            "    allow: [\"10.0.0.0/8\"]\n",
            "    deny: [\"10.9.0.0/16\"]\n",
        ] {
            let e = check(&cfg(tight, ""), &cfg(wider, "")).expect_err(wider);
            assert_eq!(e.key, "routes[0].allow", "{e}");
            assert!(
                e.reason
                    .contains("widens the allow/deny rules of route \"api\""),
                "{e}"
            );
            let d = crate::config::downgrade::diff(&cfg(tight, ""), &cfg(wider, ""));
            assert!(d.contains("widens"), "{d}");
        }
        check(
            &cfg(tight, ""),
            &cfg("", "allow_security_downgrade: true\n"),
        )
        .expect("explicit");
    }

    #[test]
    fn errors_name_the_key_path() {
        let cases = [
            ("  - name: a\n    path: /\n    pool: sessions\n    allow: [\"10.0.0.0/33\"]\n", "routes[0].allow[0]", "not an IP address or CIDR"),
            ("  - name: a\n    path: /\n    pool: sessions\n    deny: [\"::1\", \"2001:db8::1/32\"]\n", "routes[0].deny[1]", "host bits"),
            ("  - name: a\n    path: /\n    pool: sessions\n    deny: [\"fe80::/200\"]\n", "routes[0].deny[0]", "not an IP address"),
            ("  - name: a\n    path: /\n    pool: sessions\n    allow: []\n", "routes[0].allow", "empty list"),
            ("  - name: a\n    path: /\n", "routes[0].pool", "required"),
            ("  - name: a\n    path: /\n    pool: sessions\n    redirect:\n      to: https://a.example\n", "routes[0].redirect", "leave pool out"),
            ("  - name: a\n    path: /\n    redirect:\n      to: /relative\n", "routes[0].redirect.to", "http:// or https://"),
            ("  - name: a\n    path: /\n    redirect:\n      to: https://a.example\n      status: 303\n", "routes[0].redirect.status", "301, 302, 307, 308"),
        ];
        let cases: Vec<(&str, &str, &str)> = cases
            .into_iter()
            .chain([
                ("  - name: a\n    path: /\n    pool: sessions\n    request_headers:\n      set: {X-A: b}\n", "routes[0].request_headers", "only on http routes"),
                ("  - name: a\n    path: /\n    pool: sessions\n    response_headers:\n      set: {X-Hotplex-Worker: w9}\n", "routes[0].response_headers.set.X-Hotplex-Worker", "trust headers"),
                ("  - name: a\n    path: /\n    pool: sessions\n    response_headers:\n      remove: [x-a, Connection]\n", "routes[0].response_headers.remove[1]", "hop-by-hop"),
                ("  - name: a\n    path: /\n    pool: sessions\n    response_headers:\n      add: {X-A: \"$remote_addr\"}\n", "routes[0].response_headers.add.X-A", "unknown variable $remote_addr"),
                ("  - name: a\n    path: /\n    pool: sessions\n    response_headers:\n      add: {\"bad name\": x}\n", "routes[0].response_headers.add.bad name", "not a valid header name"),
                ("  - name: a\n    path: /\n    pool: sessions\n    response_headers: {}\n", "routes[0].response_headers", "no rule"),
                ("  - name: a\n    path: /\n    redirect:\n      to: https://a.example\n    auth: off\n", "routes[0].redirect", "before authentication"),
                ("  - name: a\n    path: /\n    redirect:\n      to: https://a.example\n    response_headers:\n      set: {X-A: b}\n", "routes[0].redirect", "header rules do not apply"),
            ])
            .collect();
        for (routes, key, reason) in cases {
            let (k, r) = err(routes);
            assert_eq!(k, key, "{routes}: {r}");
            assert!(r.contains(reason), "{key}: {r:?} should mention {reason:?}");
        }
        let (k, r) = err("  - name: a\n    path: /\n    redirect:\n      to: https://a.example\n      code: 301\n");
        assert!(k.starts_with("routes[0]"), "{k}");
        assert!(r.contains("code"), "{r}");
    }
}
